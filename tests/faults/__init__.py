"""Faults and abuse suite: crashes, outages, hostile input and access, with recorded figures."""
