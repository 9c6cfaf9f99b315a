"""The running service: one trio nursery that owns the tunnel, the routes, the Docker watcher and the control
socket, and heals itself when Docker or the VM goes away."""
