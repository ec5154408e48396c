"""State changes, measurements and summaries published to an MQTT broker: the publisher,
its client, the messages and the bounded queue that keeps the probe path from ever
waiting on the broker."""
