"""Tests of ``migrate verify``: targets, ARP frames, and the prober on the test wire."""
