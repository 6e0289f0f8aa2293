"""Retrieval-augmented generation: namespaces, entries, chunking, embedding, hybrid search."""
