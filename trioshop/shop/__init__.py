"""The shop domain: catalog, cart actor, the shop facade and the order services."""
