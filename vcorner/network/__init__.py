"""The network (torch; imported only for training, export and the torch reference backend)."""
