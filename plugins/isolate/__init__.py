"""Isolate and run: submission code runs only in spawned child processes, under time and memory limits."""
