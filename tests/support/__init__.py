"""Real peers for the tests: SMTP servers, a DNS server, certificates (loopback only)."""
