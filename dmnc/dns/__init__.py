"""Containers by name: a small authoritative DNS server for one private domain (default `dmnc.internal`).

```
names.py        pure: Docker containers/networks/Compose labels -> NameTable (which name has which addresses)
answer.py       pure: one query's wire bytes + the table -> the answer's wire bytes (or a counted drop)
ratelimit.py    pure: per-source and global token buckets, `now` passed in
domain.py       pure: the configured domain, refused and warned-about names
server.py       trio: UDP and TCP listeners on the host's tunnel addresses, port 53 or a fallback
resolver_files  macOS: /etc/resolver/<domain> so the system resolver asks dmnc for that domain
resolved.py     Linux: systemd-resolved's per-link DNS and routing-only domain over D-Bus (jeepney)
```

dmnc is never a recursive or open resolver: anything outside its domain, reverse lookups included, is REFUSED.
"""
