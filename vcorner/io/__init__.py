"""Readers and writers of images, annotations, centres and batch outputs."""
