_base_ = './dpt_localvit-tiny_labelme.py'

# The class token added to every patch token before reassembling.
model = dict(decode_head=dict(readout_type='add'))
