from .runtime import start

start()
