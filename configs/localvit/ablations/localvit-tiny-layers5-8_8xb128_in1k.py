_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 3: locality in layers 5-8 only (72.1).
model = dict(backbone=dict(locality_layers=[4, 5, 6, 7]))
