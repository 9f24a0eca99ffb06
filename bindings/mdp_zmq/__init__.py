"""Blocking pyzmq driver for mdp_core."""
