_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 3: locality in layers 1-4 only (73.1).
model = dict(backbone=dict(locality_layers=[0, 1, 2, 3]))
