_base_ = './dpt_localvit-tiny_labelme.py'

# The class token dropped: patch tokens only.
model = dict(decode_head=dict(readout_type='ignore'))
