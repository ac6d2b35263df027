"""Sources reserved for independent checks of the product (DEVELOPERS.md): no recipe may read them
for training, validation or tuning. One list for every recipe; their tests check against it."""

RESERVED_PACKAGES = ("0ad-data", "asterisk-*", "codec2-examples", "supertuxkart-data", "widelands-data",
                     "fretsonfire-*", "x42-plugins", "music21 Bach chorales")
