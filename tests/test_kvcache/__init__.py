"""KV cache: every discovered submission on every hidden case of reference/kv_cache.py."""
