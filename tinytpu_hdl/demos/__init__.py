"""Demonstrations run by ``tinytpu demo``: XOR and handwritten digits, trained on the device."""
