"""The catalogue-backed identification service that the web app, `watch` and
`catalog identify` call: sync the gallery, file the photo, identify, group, store.

Imports catalog and every wing below it.
"""
