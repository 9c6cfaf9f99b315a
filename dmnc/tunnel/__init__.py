"""The data path: TUN packets through the WireGuard core to UDP datagrams and back."""
