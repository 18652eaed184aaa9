"""Backbone network definitions used by Class Map Explorer."""
