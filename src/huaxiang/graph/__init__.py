"""The user–item–brand–category knowledge graph: triples in the store, neighbourhoods, export."""
