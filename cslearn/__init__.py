"""cslearn: continual (class-incremental) semantic segmentation, as a course and a library.

Read in this order: protocol -> data -> models -> losses -> methods -> engine -> continual.
"""
__version__ = "0.1.0"
