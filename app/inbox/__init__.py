"""The inbox: an event's whole life, from the webhook that brings it to the state it ends in."""
