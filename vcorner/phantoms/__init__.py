"""Realistic phantom lateral cervical spine radiographs with annotator-like annotations (docs/design.md section 4).

Modules, from anatomy to files: ``anatomy`` (C2-T1 bodies in mm along a curve), ``elements`` (posterior
elements, skull base, mandible, hardware), ``softtissue`` (neck, airway, shoulders), ``scene`` (field of
view, rotation, crop, marker spots), ``render`` (attenuation map), ``degrade`` (exposure, noise, processing,
markers), ``annotate`` (clicked centres, corners and contours), ``dataset`` (:func:`render_phantom`,
:func:`synthesize_dataset`) and ``overlay`` (:func:`draw_annotations`).
"""
