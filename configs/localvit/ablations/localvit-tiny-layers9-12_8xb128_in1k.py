_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 3: locality in layers 9-12 only (69.1).
model = dict(backbone=dict(locality_layers=[8, 9, 10, 11]))
