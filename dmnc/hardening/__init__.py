"""The daemon's own protections, as root: it runs and reads only what root alone can change (`file_trust`), and its
memory, which holds the host's private key, never lands in a core dump (`process`)."""
