"""The SimPy driver: the same Engine on a simulated clock, against a simulated world."""
