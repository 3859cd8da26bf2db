"""ringcast: a high fan-out WebSocket server over io_uring."""

__version__ = "0.1.0"
