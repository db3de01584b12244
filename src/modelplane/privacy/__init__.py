"""Privacy runtime: vertical federated LR with Paillier over TLS, PSI, DP-SGD, adversarial training, TEE.

Heavy dependencies (phe, gmpy2, opacus, dcap-qvl, torch) are imported lazily inside the modules that
need them; install them with ``pip install 'modelplane[privacy]'``.
"""
