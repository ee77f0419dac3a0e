"""Modelling code written into every `toolkit-export --format hf` directory, so that transformers'
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads the export (`auto_map` in its
config.json names these files). They depend on torch and transformers only, never on the toolkit:
an exported directory must load on a machine without it. This package imports nothing itself.
"""
