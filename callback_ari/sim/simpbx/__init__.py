"""The simulated PBX: a wire-level fake Asterisk (ARI + AMI) and a throwaway redis-server.

Shipped inside the package so that ``callback-ari demo`` and the benchmarks can run the real
service against it; the test suite uses exactly the same code.
"""
