"""dmnc: reach Docker containers by IP from the host through a userspace WireGuard tunnel into the Docker VM.

The map, top to bottom (imports point downwards only; each folder is one job):

- Entry: `cli` parses the command line and imports only the subcommand being run, from `commands/` (one module per
  subcommand, plus `commands/_common.py` for what they share: flags, exit codes, config-or-exit).
- The running service, `supervisor/`: `Supervisor` owns one trio nursery with the tunnel, the route reconciler, the
  control socket, the Docker watcher (`docker_watch`) and, below it, the VM keeper (`vm_keeper`, with the pure
  `VmHealth` verdicts); `host_watch` feeds the route policy the host's own addresses, DNS servers and the VM's
  endpoint; `peer_subnets` keeps the VM peer's allowed IPs in step with the routes; `conflicts` finds another tool
  holding what dmnc needs (refusal in the foreground, standby as a service); `snapshot` builds the status snapshot;
  `path_keeper` keeps each address family on the tunnel or the direct path (the pure chooser `path`, the ICMP
  probe `echo_probe`).
- What talks to the outside, each behind a small interface:
  - `control/`: the control socket (`protocol`, `messages` = the status/event JSON contract, `server`, `client`);
  - `doctor/`: `dmnc doctor` (`checks` = pure verdicts, `gather` = facts, `probe` = the probe container);
  - `tunnel/`: the data path, TUN <-> WireGuard core <-> UDP (`datapath`), `udp` (the socket boundary) and
    `flowfilter` (the pure one-way door: the VM reaches the host only with replies to the host's flows);
  - `dns/`: container names over DNS (the name table, the answers, the server, the host's resolver settings);
  - `docker/`: the Docker Engine API over its Unix socket with httpx (models and errors mapped at the boundary);
  - `vm/`: the VM side (the setup script, its image, the macvlan/ipvlan shims and the runner that drives them
    through Docker);
  - `routes/`: host routes (Linux rtnetlink, macOS PF_ROUTE), the pure route policy and the reconciler;
  - `tun/`: TUN devices (Linux /dev/net/tun, macOS utun), one module per platform.
- The protocol core, `wireguard/`: WireGuard, sans-I/O (`now` and the RNG are arguments), and `conffile` for
  standard WireGuard config files (`dmnc wg up`).
- `hardening/`: the root daemon's own protections (only root-owned code and config; no core dumps).
- Cross-cutting basics: `config` (flags > environment > config file), `logsetup` (log lines, levels, and `printable`
  for outside text in logs and output), `errors` (exception groups), `netlink` (the rtnetlink codec shared by `tun/`
  and `routes/`), `system_service` (the systemd unit and launchd plist that `dmnc service install` writes).
"""

__version__ = "0.1.0"
