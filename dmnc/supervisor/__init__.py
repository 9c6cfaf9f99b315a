"""The running service: one trio nursery that owns the tunnel, the routes, the Docker watcher and the control
socket, and heals itself when Docker or the VM goes away.

supervisor.py (Supervisor: start-up order, nursery, stop, SIGHUP reload), docker_watch.py (Docker connection and
network events), vm_keeper.py (VM side setup and its pure health verdict, VmHealth), snapshot.py (`dmnc status`),
parts.py (the running parts), backoff.py (jittered exponential backoff), log.py (the `supervisor` log component).
"""
