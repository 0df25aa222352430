"""The Redis store of callbacks: the store and its Lua scripts."""
