"""How a case's event is written for a receiver: the typed event built from an incident (event.py), JSON (the
alerts file, the webhook, MQTT) and OASIS CAP 1.2 XML (cap.py)."""
