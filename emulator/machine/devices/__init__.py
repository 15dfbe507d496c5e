"""Port-mapped devices of the Aetherion PC (docs/memory-map.md) and the bus that routes to them."""
