"""Hostile and broken inputs the tests build themselves (issue 10): small files that declare
huge images, FIFOs, devices, sockets, swapped symlinks. Each builder is cheap (a few hundred
KB at most) so a corpus of them runs in the normal test suite."""
