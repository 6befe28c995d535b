"""Outbound notifications over HTTP: which URLs and addresses they may go to, signing, and sending one POST.

It speaks to receivers as graphclient speaks to Graph; what a job tells and when is jobs/notify.py's.
"""
