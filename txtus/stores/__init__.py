"""
Stores: where upload bytes and their info live.

One module per store, as tusd keeps one package per store under ``pkg/``.
A store knows nothing about HTTP; it provides the interfaces of
L{txtus.interfaces} it can honour and fills those slots of a
L{txtus.composer.StoreComposer} with C{use_in}.
"""
