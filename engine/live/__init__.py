"""The live driver: real sockets, DNS, TLS, SQLite spool; turns effects into I/O."""
