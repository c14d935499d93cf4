"""Personal data: erasing what an upload's deletion must take with it, and retention by age.

See docs/privacy.md for what each deletion removes and keeps, and in what order.
"""
