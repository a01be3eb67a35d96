"""Learning: gymnasium environments, batched vector envs, rewards, training, export (needs ``.[train]``).

Nothing here is imported by the production runner: it loads exported ONNX models through
:mod:`wsrl.policies.learned`, which needs only numpy and onnxruntime.
"""
