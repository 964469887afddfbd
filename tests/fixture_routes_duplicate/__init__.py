"""Two modules routing the same MQTT filter."""
