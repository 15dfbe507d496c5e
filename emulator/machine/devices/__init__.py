"""Port-mapped devices of the Aetherion PC (DESIGN.md §3) and the bus that routes to them."""
