"""Jepsen-style chaos runs against the sandbox: seeded load and faults, a recorded
history, and safety invariants checked from that history afterwards (docs/CHAOS.md)."""
