"""Discovery methods: plain functions ``method(generator, *, …options) -> Directions``."""
