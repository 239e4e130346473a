"""Training scripts of the testbed generators and the factor reader (run as ``python -m training.NAME``)."""
