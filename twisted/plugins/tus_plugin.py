from twisted.application.service import ServiceMaker

tus = ServiceMaker("txtus", "txtus.tap", "A tus resumable-upload server.", "tus")
