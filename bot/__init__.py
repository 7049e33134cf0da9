"""The runtime that wires Yibao together: config, Redis, OTP, SMS, alerts, CLI."""
