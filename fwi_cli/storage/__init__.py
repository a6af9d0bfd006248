"""Boundary-ring storage: codecs (fp32/fp16/bf16/int8) and tiers (gpu/cpu/disk).

Contract used by both implementations (see ``base.RingStore``): the forward pass ``put``s
chunks of consecutive steps in increasing order, the backward pass ``get``s them in
decreasing order; every value comes back as float32 on the compute device.
"""
