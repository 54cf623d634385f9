"""Privacy: copy detection, nearest-neighbour distances, membership inference, planted copies and release export."""
