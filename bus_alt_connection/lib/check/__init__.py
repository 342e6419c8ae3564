"""The operator's check: will the bus work with this configuration?"""
