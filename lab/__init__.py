"""The lab: a scenario's remote world realised as real servers on loopback.

The simulator (`sim`) realises a scenario's ``[domains]`` and ``[hosts]``
tables on a SimPy clock; the lab realises the same description for real:
one SMTP server per host on its own 127.0.0.x address (`lab.servers`, its
wire format in `lab.smtp_wire`), a DNS server answering the MX and A records
(`lab.dns`), TLS certificates made on the fly by trustme (`lab.world`), all
in this process or in a child one (`lab.process`).  `lab.run` then delivers the scenario's
traffic into it with the live driver and writes the same outputs as
``egress simulate``; `lab.compare` sets the two side by side.

The lab joins `engine.live` and `sim` (DESIGN.md, "One world, two
realisations"), so it sits beside both, never inside either.  It binds only
loopback addresses (127.0.0.0/8): a lab can never send mail anywhere.
"""

from __future__ import annotations

__all__: list[str] = []
