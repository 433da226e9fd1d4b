"""Images: the content store, image records, layers, snapshots, archives, GC."""
